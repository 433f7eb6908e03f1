//! Everything a user copies out of the repository is read here by the
//! parsers that will read it for real, so none of it can rot:
//!
//! - `examples/`: NADs through `plexus`'s resolver (each pod's annotation
//!   planned against the example NADs and `net.d/`, capabilities checked),
//!   the `sriov` NAD through the `sriov` plugin's config check, the
//!   device-plugin config through its parser and `discover` on a fake X710,
//!   flows through the flow parser, the `FlowTable` through its type;
//! - `deploy/` and `e2e/kind/`: every object against its k8s-openapi type
//!   (strictly: a field the type does not have is an error, not dropped),
//!   with the cross-references a cluster would only report at runtime
//!   (selectors, volumes, service accounts, RBAC, flags of our binaries,
//!   images built by our Dockerfiles).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::Pod;
use plexus_meta_cni::{
    cluster::{PodRef, Standalone},
    config::PlexusConf,
    resolve::{PodContext, Purpose, Resolver},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML documents of a file, as JSON values (empty documents skipped).
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every file under `dir`, relative to the repository, sorted.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.strip_prefix(repo()).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, &mut out);
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap().display().to_string()
}

/// Deserializes `doc` into `T` and fails on any field `T` does not know:
/// the typed value, serialized again, must still hold every non-null field
/// of the original (k8s-openapi's own deserializers skip unknown fields,
/// as the API server does unless asked to be strict).
fn strict<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> T {
    fn dropped(orig: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
        match (orig, back) {
            (Value::Object(o), Value::Object(b)) => {
                for (k, v) in o {
                    let p = format!("{path}.{k}");
                    match b.get(k) {
                        Some(bv) => dropped(v, bv, &p, out),
                        None if v.is_null() => {}
                        None => out.push(p),
                    }
                }
            }
            (Value::Array(o), Value::Array(b)) => {
                for (i, (v, bv)) in o.iter().zip(b).enumerate() {
                    dropped(v, bv, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what}: not a valid {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).unwrap();
    let mut unknown = Vec::new();
    dropped(doc, &back, "", &mut unknown);
    assert!(
        unknown.is_empty(),
        "{what}: {} has no field {}",
        std::any::type_name::<T>(),
        unknown.join(", ")
    );
    typed
}

// ---------------------------------------------------------------- examples

/// The example plexus config, with `confDir` pointed at `examples/net.d`
/// (on a node it is `/etc/cni/net.d`).
fn example_conf() -> PlexusConf {
    let path = repo().join("examples/plexus/00-plexus.conf");
    let mut v: Value = serde_json::from_str(&read(&path)).unwrap();
    assert_eq!(v["type"], "plexus");
    v["confDir"] = json!(repo().join("examples/net.d"));
    PlexusConf::from_value(&v).unwrap_or_else(|e| panic!("{}: {e:?}", rel(&path)))
}

/// One planned attachment: network, ifname, delegate types, resource.
type Attachment = (String, String, Vec<String>, Option<String>);

/// What `plexus` would run for an example pod.
fn plan(pod: &Pod) -> Vec<Attachment> {
    try_plan(pod, &repo().join("examples/nads"))
        .unwrap_or_else(|e| panic!("pod {:?}: {e:?}", pod.metadata.name))
}

/// What `plexus` would run for `pod` with the NADs of `nads` (a directory,
/// or one file).
fn try_plan(pod: &Pod, nads: &Path) -> Result<Vec<Attachment>, plexus_cni::CniError> {
    let conf = example_conf();
    let annotations: BTreeMap<String, String> =
        pod.metadata.annotations.clone().unwrap_or_default();
    let nad_dir = tempfile::tempdir().unwrap();
    let dir = if nads.is_dir() {
        nads.to_owned()
    } else {
        fs::copy(nads, nad_dir.path().join(nads.file_name().unwrap())).unwrap();
        nad_dir.path().to_owned()
    };
    let cluster = Standalone::new(Some(&dir), annotations, None).expect("NADs load");
    let pod_ref = PodRef {
        namespace: pod.metadata.namespace.clone().unwrap(),
        name: pod.metadata.name.clone().unwrap(),
        uid: None,
    };
    let info = plexus_meta_cni::cluster::Cluster::pod(&cluster, &pod_ref)
        .unwrap()
        .unwrap();
    let resolver = Resolver {
        conf: &conf,
        cluster: Some(&cluster),
    };
    let (planned, skipped) = resolver.plan(
        Some(PodContext {
            pod: &pod_ref,
            info: &info,
        }),
        "eth0",
        &Map::new(),
        Purpose::Add,
    )?;
    assert!(skipped.is_empty());
    Ok(planned
        .into_iter()
        .map(|p| {
            let types = p
                .list
                .plugins
                .iter()
                .map(|d| d.plugin_type().to_owned())
                .collect();
            (p.network, p.ifname, types, p.resource)
        })
        .collect())
}

#[test]
fn example_nads_resolve_to_the_delegates_they_name() {
    let nads = plexus_meta_cni::nad::load_dir(&repo().join("examples/nads")).unwrap();
    let conf_dir = repo().join("examples/net.d");
    let mut seen = BTreeMap::new();
    for nad in &nads {
        let list = nad
            .network(&conf_dir)
            .unwrap_or_else(|e| panic!("NAD {}: {e:?}", nad.display()));
        let types: Vec<String> = list
            .plugins
            .iter()
            .map(|p| p.plugin_type().to_owned())
            .collect();
        seen.insert(nad.display(), (types, nad.resource_name.clone()));
    }
    let want = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let expected: BTreeMap<String, (Vec<String>, Option<String>)> = [
        ("default/bridge-conf", want(&["bridge"]), None),
        ("default/host-device-conf", want(&["host-device"]), None),
        ("default/ipvlan-conf", want(&["ipvlan"]), None),
        ("default/macvlan-conf", want(&["macvlan"]), None),
        ("default/macvlan-tuned", want(&["macvlan", "tuning"]), None),
        (
            "default/sriov-net",
            want(&["sriov"]),
            Some("intel.com/intel_sriov_netdevice".to_owned()),
        ),
        ("default/storage", want(&["macvlan"]), None),
    ]
    .into_iter()
    .map(|(n, t, r)| (n.to_owned(), (t, r)))
    .collect();
    assert_eq!(seen, expected);

    // Every NAD is also a valid object of the generated CRD's type. The
    // CRD (like upstream's) lets `spec` be absent; kube's derived type
    // always has one, so an absent spec reads as an empty one.
    for path in files_under(&repo().join("examples/nads")) {
        for mut doc in yaml_docs(&repo().join(&path)) {
            if doc.get("spec").is_none() {
                doc["spec"] = json!({});
            }
            strict::<crds::NetworkAttachmentDefinition>(&doc, &path);
        }
    }
}

#[test]
fn the_sriov_example_is_a_valid_sriov_config_once_plexus_adds_the_vf() {
    let nads = plexus_meta_cni::nad::load_dir(&repo().join("examples/nads")).unwrap();
    let nad = nads.iter().find(|n| n.name == "sriov-net").unwrap();
    let mut config: Value = serde_json::from_str(&nad.config).unwrap();
    let args = plexus_cni::args::CniArgs::default();
    // Without the VF plexus passes on, the plugin says what is missing.
    let err = plexus_sriov_device_plugin::cni::conf::NetConf::parse(&config, &args).unwrap_err();
    assert!(err.msg.contains("deviceID is required"), "{err:?}");
    config["deviceID"] = json!("0000:3b:02.1");
    let conf = plexus_sriov_device_plugin::cni::conf::NetConf::parse(&config, &args)
        .unwrap_or_else(|e| panic!("examples/nads/sriov.yaml: {e:?}"));
    assert_eq!(conf.ipam_type(), Some("host-local"));
}

#[test]
fn example_pods_plan_against_the_example_nads() {
    let pods_dir = repo().join("examples/pods");
    let mut plans = BTreeMap::new();
    for path in files_under(&pods_dir) {
        for doc in yaml_docs(&repo().join(&path)) {
            let pod: Pod = strict(&doc, &path);
            plans.insert(pod.metadata.name.clone().unwrap(), (plan(&pod), pod));
        }
    }
    let nets = |name: &str| -> Vec<(String, String, Vec<String>)> {
        plans[name]
            .0
            .iter()
            .map(|(n, i, t, _)| (n.clone(), i.clone(), t.clone()))
            .collect()
    };
    let s = |v: &str| v.to_owned();
    let cilium = (s("cilium"), s("eth0"), vec![s("cilium-cni")]);
    assert_eq!(
        nets("short-form"),
        [
            cilium.clone(),
            (s("default/macvlan-conf"), s("net1"), vec![s("macvlan")]),
            (s("default/storage"), s("storage0"), vec![s("macvlan")]),
        ]
    );
    assert_eq!(
        nets("json-form"),
        [
            cilium.clone(),
            (s("default/bridge-conf"), s("net1"), vec![s("bridge")]),
            (s("default/bridge-conf"), s("data1"), vec![s("bridge")]),
        ]
    );
    assert_eq!(
        nets("static-ip-mac"),
        [
            cilium.clone(),
            (
                s("default/macvlan-tuned"),
                s("net1"),
                vec![s("macvlan"), s("tuning")]
            ),
        ]
    );
    assert_eq!(
        nets("default-route"),
        [
            cilium.clone(),
            (s("default/ipvlan-conf"), s("net1"), vec![s("ipvlan")])
        ]
    );

    // The SR-IOV pod requests exactly the resource its NAD names.
    let (sriov_plan, sriov_pod) = &plans["sriov-pod"];
    let resource = sriov_plan[1]
        .3
        .clone()
        .expect("sriov-net has a resourceName");
    let container = &sriov_pod.spec.as_ref().unwrap().containers[0];
    let res = container.resources.as_ref().unwrap();
    for list in [&res.requests, &res.limits] {
        assert_eq!(list.as_ref().unwrap()[&resource].0, "1");
    }
    assert_eq!(
        plans.len(),
        5,
        "a new example pod needs its expected plan here"
    );
}

#[test]
fn example_static_ip_and_mac_reach_only_capable_delegates() {
    // The same pod against a NAD without the `mac` capability is refused
    // (code 7), so the example's capabilities are what makes it work.
    let path = repo().join("examples/pods/static-ip-mac.yaml");
    let mut doc = yaml_docs(&path).remove(0);
    let ann = "k8s.v1.cni.cncf.io/networks";
    doc["metadata"]["annotations"][ann] =
        json!(r#"[{"name": "macvlan-conf", "mac": "02:42:c0:a8:14:05"}]"#);
    let pod: Pod = strict(&doc, "static-ip-mac, edited");
    let err = try_plan(&pod, &repo().join("examples/nads")).unwrap_err();
    assert_eq!(err.code, 7);
    assert!(err.msg.contains("mac"), "{err:?}");
}

#[test]
fn example_device_plugin_config_parses_and_pools_the_x710_vfs() {
    let path = repo().join("examples/sriov-device-plugin/config.json");
    let cfg = plexus_sriov_device_plugin::config::parse(&read(&path), "intel.com");
    assert!(cfg.errors.is_empty(), "{:?}", cfg.errors);
    assert!(cfg.unknown_keys.is_empty(), "{:?}", cfg.unknown_keys);
    let names: Vec<String> = cfg
        .pools
        .iter()
        .map(plexus_sriov_device_plugin::config::PoolConfig::resource)
        .collect();
    assert_eq!(
        names,
        [
            "intel.com/intel_sriov_netdevice",
            "intel.com/intel_sriov_dpdk",
            "nvidia.com/mlnx_rdma"
        ]
    );

    // On the reference X710 (VF 0 on vfio-pci, VFs 1-3 on iavf), the kernel
    // VFs land in the netdevice pool and VF 0 in the DPDK pool.
    let host = plexus_testkit::NetNs::with_prefix("ex-dp").unwrap();
    let fake = plexus_testkit::FakeSysfs::new();
    fake.x710();
    let v: Value =
        serde_json::from_str(&plexus_e2e::discover(&host, &[], &path, fake.root(), true)).unwrap();
    let mut pooled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in v["devices"].as_array().unwrap() {
        if d["verdict"]["state"] == "pooled" {
            pooled
                .entry(
                    d["verdict"]["resource"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
                .or_default()
                .push(d["address"].as_str().unwrap().to_owned());
        }
    }
    let want: BTreeMap<String, Vec<String>> = [
        (
            "intel.com/intel_sriov_netdevice",
            vec!["0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"],
        ),
        ("intel.com/intel_sriov_dpdk", vec!["0000:3b:02.0"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(pooled, want, "{v:#}");
}

#[test]
fn example_flows_parse_and_the_flow_table_is_a_valid_resource() {
    let path = repo().join("examples/flows/vf-switch.flows");
    let flows = plexus_dpu_offload::parse::parse_flows(&read(&path))
        .unwrap_or_else(|e| panic!("{}: {e:?}", rel(&path)));
    assert_eq!(flows.len(), 5);

    let path = repo().join("examples/flows/flowtable.yaml");
    let doc = yaml_docs(&path).remove(0);
    let table: plexus_dpu_offload::flowtable::FlowTable = strict(&doc, &rel(&path));
    let flows = plexus_dpu_offload::parse::parse_flows(&table.text())
        .unwrap_or_else(|e| panic!("{}: {e:?}", rel(&path)));
    assert_eq!(flows.len(), table.spec.flows.len());
    let labels = BTreeMap::from([("plexus.dev/dpu".to_owned(), "true".to_owned())]);
    assert!(table.selects(&labels));
    assert!(!table.selects(&BTreeMap::new()));
}

#[test]
fn every_example_file_is_checked_by_a_test_here() {
    let checked: BTreeSet<String> = [
        "examples/README.md",
        "examples/plexus/00-plexus.conf",
        "examples/net.d/05-cilium.conflist",
        "examples/net.d/storage.conflist",
        "examples/sriov-device-plugin/config.json",
        "examples/flows/vf-switch.flows",
        "examples/flows/flowtable.yaml",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(files_under(&repo().join("examples/nads")))
    .chain(files_under(&repo().join("examples/pods")))
    .collect();
    let all = files_under(&repo().join("examples"));
    let unchecked: Vec<_> = all.difference(&checked).collect();
    assert!(
        unchecked.is_empty(),
        "examples without a test: {unchecked:?}"
    );
}

// ------------------------------------------------------------------ deploy

/// The files a kustomization directory applies, following directory
/// resources into their own kustomizations; with the images it overrides.
fn kustomize(dir: &Path, files: &mut Vec<PathBuf>, images: &mut BTreeSet<String>) {
    let k = yaml_docs(&dir.join("kustomization.yaml")).remove(0);
    assert_eq!(k["kind"], "Kustomization", "{}", dir.display());
    for r in k["resources"].as_array().into_iter().flatten() {
        let path = dir.join(r.as_str().unwrap());
        let path = path.canonicalize().unwrap_or(path);
        if path.is_dir() {
            kustomize(&path, files, images);
        } else {
            assert!(
                path.is_file(),
                "{}: {} does not exist",
                dir.display(),
                path.display()
            );
            files.push(path);
        }
    }
    for i in k["images"].as_array().into_iter().flatten() {
        images.insert(i["name"].as_str().unwrap().to_owned());
    }
}

/// Validates one object by kind against its k8s-openapi (or our own)
/// type.
fn validate(doc: &Value, what: &str) {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "ServiceAccount") => drop(strict::<core::ServiceAccount>(doc, what)),
        ("v1", "ConfigMap") => drop(strict::<core::ConfigMap>(doc, what)),
        ("v1", "Namespace") => drop(strict::<core::Namespace>(doc, what)),
        ("v1", "Pod") => drop(strict::<Pod>(doc, what)),
        ("apps/v1", "DaemonSet") => drop(strict::<apps::DaemonSet>(doc, what)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            drop(strict::<rbac::ClusterRole>(doc, what));
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            drop(strict::<rbac::ClusterRoleBinding>(doc, what));
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            drop(strict::<ext::CustomResourceDefinition>(doc, what));
        }
        ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => {
            drop(strict::<crds::NetworkAttachmentDefinition>(doc, what));
        }
        ("plexus.dev/v1alpha1", "FlowTable") => {
            drop(strict::<plexus_dpu_offload::flowtable::FlowTable>(
                doc, what,
            ));
        }
        _ => panic!("{what}: no type for {api} {kind}"),
    }
}

/// `/usr/bin/<binary>` as the image of `image` installs it, from its
/// Dockerfile (`deploy/images/<name>.Dockerfile`).
fn image_binary(image: &str) -> String {
    let name = image
        .strip_prefix("ghcr.io/plexus-net/")
        .and_then(|i| i.split(':').next())
        .unwrap_or_else(|| panic!("image {image} is not one of ours"));
    let path = repo().join(format!("deploy/images/{name}.Dockerfile"));
    let text = read(&path);
    let bin = text
        .split_whitespace()
        .skip_while(|w| *w != "--bin")
        .nth(1)
        .unwrap_or_else(|| panic!("{}: no cargo build --bin", rel(&path)));
    assert!(
        text.contains(&format!("COPY --from=build /out/{bin} /usr/bin/{bin}")),
        "{}: {bin} is not installed as /usr/bin/{bin}",
        rel(&path)
    );
    bin.to_owned()
}

/// `$(VAR)` references in a container's args, resolved from its env the
/// way the kubelet does (ConfigMap keys looked up in `config_maps`).
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "unresolved variable in {arg:?}");
    out
}

#[test]
fn deploy_manifests_are_valid_kubernetes_and_agree_with_each_other() {
    let mut files = Vec::new();
    let mut images = BTreeSet::new();
    kustomize(&repo().join("deploy"), &mut files, &mut images);
    let mut objects: Vec<(String, Value)> = Vec::new();
    for f in &files {
        for doc in yaml_docs(f) {
            validate(&doc, &rel(f));
            objects.push((rel(f), doc));
        }
    }
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
            .map(|(_, d)| d.clone())
    };
    // The CRDs deploy/ applies are the generated ones.
    for (_, crd) in crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        assert!(
            find("CustomResourceDefinition", &name).is_some(),
            "{name} not deployed"
        );
    }
    // The device plugin's ConfigMap holds the example config.
    let cm = find("ConfigMap", "sriovdp-config").unwrap();
    let deployed: Value =
        serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    let example: Value = serde_json::from_str(&read(
        &repo().join("examples/sriov-device-plugin/config.json"),
    ))
    .unwrap();
    assert_eq!(deployed, example);

    let mut used_images = BTreeSet::new();
    let mut daemonsets = Vec::new();
    for (file, ds) in objects.iter().filter(|(_, d)| d["kind"] == "DaemonSet") {
        let name = ds["metadata"]["name"].as_str().unwrap();
        daemonsets.push(name.to_owned());
        let what = format!("{file}: DaemonSet {name}");
        let spec = &ds["spec"]["template"]["spec"];
        for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(
                &ds["spec"]["template"]["metadata"]["labels"][k], v,
                "{what}: selector"
            );
        }
        // Its service account exists and is bound to a role that exists.
        if spec["automountServiceAccountToken"] != false {
            let sa = spec["serviceAccountName"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no service account"));
            assert!(
                find("ServiceAccount", sa).is_some(),
                "{what}: no ServiceAccount {sa}"
            );
            let binding = objects
                .iter()
                .map(|(_, d)| d)
                .find(|d| {
                    d["kind"] == "ClusterRoleBinding"
                        && d["subjects"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|s| s["name"] == sa)
                })
                .unwrap_or_else(|| panic!("{what}: {sa} is bound to nothing"));
            let role = binding["roleRef"]["name"].as_str().unwrap();
            assert!(
                find("ClusterRole", role).is_some(),
                "{what}: no ClusterRole {role}"
            );
        }
        let volumes: BTreeSet<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let containers = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(spec["containers"].as_array().unwrap());
        for c in containers {
            let cname = c["name"].as_str().unwrap();
            let what = format!("{what} container {cname}");
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let v = m["name"].as_str().unwrap();
                assert!(volumes.contains(v), "{what}: no volume {v}");
            }
            let image = c["image"].as_str().unwrap();
            used_images.insert(image.split(':').next().unwrap().to_owned());
            let bin = image_binary(image);
            let command: Vec<&str> = c["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            let mut env = BTreeMap::new();
            for e in c["env"].as_array().into_iter().flatten() {
                let value = if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
                    let cm = find("ConfigMap", r["name"].as_str().unwrap())
                        .unwrap_or_else(|| panic!("{what}: no ConfigMap {}", r["name"]));
                    cm["data"][r["key"].as_str().unwrap()]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what}: no key {} in {}", r["key"], r["name"]))
                        .to_owned()
                } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
                    "node-1".to_owned()
                } else {
                    e["value"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what}: env {e}"))
                        .to_owned()
                };
                env.insert(e["name"].as_str().unwrap().to_owned(), value);
            }
            let args: Vec<String> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| expand(a.as_str().unwrap(), &env))
                .collect();
            if command == [format!("/usr/bin/{bin}").as_str()] {
                // Our own binary: the built one accepts these arguments
                // (clap rejects an unknown flag or a bad value before it
                // gets to --help).
                let out = std::process::Command::new(plexus_e2e::bin(&bin))
                    .args(&args)
                    .arg("--help")
                    .envs(&env)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{what}: {bin} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                // A copy step: it copies the binary the image installs.
                assert_eq!(command[0], "/bin/sh", "{what}");
                assert!(
                    args.concat().contains(&format!("/usr/bin/{bin} ")),
                    "{what}: {args:?}"
                );
            }
        }
    }
    assert_eq!(daemonsets, ["plexus", "sriov-device-plugin", "dpu-offload"]);
    assert_eq!(
        used_images, images,
        "kustomization images vs. the images the DaemonSets use"
    );
}

#[test]
fn plexus_makes_only_the_requests_its_cluster_role_allows() {
    rbac_matches_the_requests(&[("deploy/plexus.yaml", "plexus")]);
}

/// Thick mode's daemon runs under the same ServiceAccount, with the
/// overlay's role for its informers (list and watch) beside plexus's.
#[test]
fn plexus_daemon_makes_only_the_requests_its_cluster_roles_allow() {
    plexus_e2e::meta::through_daemon(|| {
        rbac_matches_the_requests(&[
            ("deploy/plexus.yaml", "plexus"),
            ("deploy/thick/plexus-daemon.yaml", "plexus-daemon"),
        ]);
    });
}

fn rbac_matches_the_requests(roles: &[(&str, &str)]) {
    use plexus_e2e::meta::{Source, World};
    let w = World::new(Source::Api);
    let pod = w.pod("rbac", Some("macvlan-dyn"));
    w.add(&pod);
    assert!(w.cni("CHECK", &pod).status.success());
    w.del(&pod);
    let requests = w.api().requests();
    assert!(
        requests.iter().any(|r| r.method == "PATCH") && requests.iter().any(|r| r.method == "GET"),
        "{requests:?}"
    );
    let rules: Vec<_> = roles
        .iter()
        .flat_map(|(file, role)| plexus_e2e::rbac::cluster_role(&repo().join(file), role))
        .collect();
    let denied = plexus_e2e::rbac::denied(&rules, &requests);
    assert!(
        denied.is_empty(),
        "the ClusterRoles {roles:?} refuse {denied:?}"
    );
    // And the role this mode adds (the last) grants nothing it does not
    // use. (Thick mode's GETs are the fallback of its caches: the run
    // above, served from them, need not make any.)
    let used: BTreeSet<_> = requests
        .iter()
        .filter_map(plexus_e2e::rbac::request_attributes)
        .collect();
    let (file, role) = roles[roles.len() - 1];
    for rule in &plexus_e2e::rbac::cluster_role(&repo().join(file), role) {
        for verb in &rule.verbs {
            for res in &rule.resources {
                assert!(
                    used.iter()
                        .any(|(v, g, r)| v == verb && r == res && rule.groups.contains(g)),
                    "{file} ({role}) grants {verb} {res}, which plexus never uses"
                );
            }
        }
    }
}

// -------------------------------------------------------------------- kind

#[test]
fn kind_suite_manifests_are_valid_and_match_its_script() {
    let kind = repo().join("e2e/kind");
    let script = read(&kind.join("run.sh"));

    let config = yaml_docs(&kind.join("kind-config.yaml")).remove(0);
    assert_eq!(config["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(config["kind"], "Cluster");
    let cluster = config["name"].as_str().unwrap();
    assert!(
        script.contains(&format!("cluster={cluster}\n")),
        "run.sh names another cluster"
    );
    let roles: Vec<&str> = config["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["control-plane", "worker", "worker"]);
    // kind names the workers <cluster>-worker, <cluster>-worker2.
    let workers = [format!("{cluster}-worker"), format!("{cluster}-worker2")];

    // The overlay applies deploy/ with the same images, retagged, and its
    // patch hits a key that exists.
    let (mut files, mut images) = (Vec::new(), BTreeSet::new());
    kustomize(&kind, &mut files, &mut images);
    let (mut deploy_files, mut deploy_images) = (Vec::new(), BTreeSet::new());
    kustomize(
        &repo().join("deploy"),
        &mut deploy_files,
        &mut deploy_images,
    );
    assert_eq!(files, deploy_files);
    assert_eq!(images, deploy_images);
    for image in &images {
        let name = image.rsplit('/').next().unwrap();
        assert!(
            script.contains(&format!("{name} ")) || script.contains(&format!(" {name})")),
            "run.sh does not build {name}"
        );
    }
    let overlay = yaml_docs(&kind.join("kustomization.yaml")).remove(0);
    for p in overlay["patches"].as_array().unwrap() {
        let target = &p["target"];
        let obj = files
            .iter()
            .flat_map(|f| yaml_docs(f))
            .find(|d| d["kind"] == target["kind"] && d["metadata"]["name"] == target["name"])
            .unwrap_or_else(|| panic!("patch target {target} is not in deploy/"));
        let ops: Vec<Value> = serde_yaml::from_str(p["patch"].as_str().unwrap()).unwrap();
        for op in ops {
            let pointer = op["path"].as_str().unwrap();
            assert!(
                obj.pointer(pointer).is_some(),
                "patch path {pointer} not in {target}"
            );
        }
    }

    // The scenario NADs and pods: valid objects, each pod planned against
    // the NADs, on the workers the cluster has.
    let nads = kind.join("nads.yaml");
    for mut doc in yaml_docs(&nads) {
        if doc.get("spec").is_none() {
            doc["spec"] = json!({});
        }
        strict::<crds::NetworkAttachmentDefinition>(&doc, "e2e/kind/nads.yaml");
    }
    let mut planned = BTreeMap::new();
    for doc in yaml_docs(&kind.join("pods.yaml")) {
        let pod: Pod = strict(&doc, "e2e/kind/pods.yaml");
        let node =
            &pod.spec.as_ref().unwrap().node_selector.as_ref().unwrap()["kubernetes.io/hostname"];
        assert!(
            workers.contains(node),
            "{node} is not a worker of {cluster}"
        );
        let plan =
            try_plan(&pod, &nads).unwrap_or_else(|e| panic!("{:?}: {e:?}", pod.metadata.name));
        assert_eq!(plan[1].1, "net1");
        planned.insert(pod.metadata.name.clone().unwrap(), plan[1].0.clone());
        assert!(script.contains(pod.metadata.name.as_deref().unwrap()));
    }
    assert_eq!(planned.len(), 4);
}

#[test]
fn the_thick_overlay_runs_the_daemon_and_points_the_shim_at_its_socket() {
    let dir = repo().join("deploy/thick");
    let (mut files, mut images) = (Vec::new(), BTreeSet::new());
    kustomize(&dir, &mut files, &mut images);
    let (mut base_files, mut base_images) = (Vec::new(), BTreeSet::new());
    kustomize(&repo().join("deploy"), &mut base_files, &mut base_images);
    base_files.push(dir.join("plexus-daemon.yaml"));
    assert_eq!(files, base_files, "deploy/ plus the daemon");
    assert_eq!(images, base_images);
    let mut objects: Vec<Value> = Vec::new();
    for f in &files {
        for doc in yaml_docs(f) {
            validate(&doc, &rel(f));
            objects.push(doc);
        }
    }
    // The patches (strategic merge of ConfigMap data) hit objects that exist.
    let k = yaml_docs(&dir.join("kustomization.yaml")).remove(0);
    for p in k["patches"].as_array().unwrap() {
        let path = dir.join(p["path"].as_str().unwrap());
        let patch = yaml_docs(&path).remove(0);
        validate(&patch, &rel(&path));
        let target = objects
            .iter_mut()
            .find(|d| {
                d["kind"] == patch["kind"] && d["metadata"]["name"] == patch["metadata"]["name"]
            })
            .unwrap_or_else(|| panic!("{}: patches nothing", rel(&path)));
        for (key, v) in patch["data"].as_object().unwrap() {
            assert!(
                target["data"].get(key).is_some(),
                "{}: no key {key} to patch",
                rel(&path)
            );
            target["data"][key] = v.clone();
        }
    }
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    // The shim's socket directory is the daemon's, and the daemon's
    // container has it at the same path as the host (the shim runs there).
    let plexus_config: Value = serde_json::from_str(
        find("ConfigMap", "plexus-config")["data"]["plexus-config"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let socket_dir = plexus_config["daemonSocketDir"].as_str().unwrap();
    let daemon_config: Value = serde_json::from_str(
        find("ConfigMap", "plexus-daemon-config")["data"]["daemon-config.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(daemon_config["socketDir"], socket_dir);
    assert_eq!(
        daemon_config["kubeconfig"], "",
        "the daemon uses its service account"
    );
    let ds = find("DaemonSet", "plexus-daemon");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["hostPID"], true);
    let sa = spec["serviceAccountName"].as_str().unwrap();
    find("ServiceAccount", sa);
    // Its informers' role is bound to that account.
    let binding = find("ClusterRoleBinding", "plexus-daemon");
    assert_eq!(binding["roleRef"]["name"], "plexus-daemon");
    assert_eq!(binding["subjects"][0]["name"], sa);
    find("ClusterRole", "plexus-daemon");
    let volumes = spec["volumes"].as_array().unwrap();
    let c = &spec["containers"][0];
    // The pod informer's node: the downward API's spec.nodeName.
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "NODE_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "{}",
        c["env"]
    );
    let mount_of = |path: &str| {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("the daemon does not mount {path}"));
        volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume {}", m["name"]))
            .clone()
    };
    assert_eq!(mount_of(socket_dir)["hostPath"]["path"], socket_dir);
    // What delegates need of the node, at the node's own paths.
    for p in [
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/var/lib/cni",
        "/run/netns",
        "/var/lib/kubelet",
    ] {
        assert_eq!(mount_of(p)["hostPath"]["path"], p);
    }
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(
            volumes.iter().any(|v| v["name"] == m["name"]),
            "no volume {}",
            m["name"]
        );
    }
    // The probes are served where the config says the metrics are.
    let metrics = daemon_config["metricsAddress"].as_str().unwrap();
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = c[probe]["httpGet"]["port"].as_u64().unwrap();
        assert!(
            metrics.ends_with(&format!(":{port}")),
            "{probe} vs {metrics}"
        );
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The built binary takes the arguments.
    let image = c["image"].as_str().unwrap();
    let bin = image_binary(image);
    assert_eq!(c["command"], json!([format!("/usr/bin/{bin}")]));
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let out = std::process::Command::new(plexus_e2e::bin(&bin))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--metrics-address"),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the daemon reads that config as it is.
    plexus_meta_cni::thick::DaemonConfig::from_value(&daemon_config, None).unwrap();
}
