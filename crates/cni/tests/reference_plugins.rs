//! The invoker against the real reference plugins (Debian's
//! `containernetworking-plugins`, in `/usr/lib/cni`), for every version they
//! speak. Each test makes a throwaway "host" netns (where the runtime, and so
//! the invoker, runs) and a "pod" netns, so nothing touches the machine's own
//! namespace; host-local keeps its leases in a temp `dataDir`.
//!
//! The Go `tuning` plugin parsing the `prevResult` we hand it is the proof
//! that our converted results are what Go plugins expect.

use std::fs;
use std::path::{Path, PathBuf};

use plexus_cni::conf::NetworkConfigList;
use plexus_cni::invoke::{Error, Invoker, RuntimeConf};
use plexus_cni::{CniResult, Version};
use plexus_testkit::NetNs;
use serde_json::{Value, json};

const REFERENCE_DIR: &str = "/usr/lib/cni";
/// What Debian's plugins (1.1.x) speak; 1.1.0 is checked to be refused.
const PLUGIN_VERSIONS: [Version; 4] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
];

struct Fixture {
    host: NetNs,
    pod: NetNs,
    data: tempfile::TempDir,
    invoker: Invoker,
}

impl Fixture {
    fn new() -> Self {
        Self {
            host: NetNs::with_prefix("host").unwrap(),
            pod: NetNs::with_prefix("pod").unwrap(),
            data: tempfile::tempdir().unwrap(),
            invoker: Invoker::new(vec![PathBuf::from(REFERENCE_DIR)]),
        }
    }

    fn rt(&self, id: &str, ifname: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: id.into(),
            netns: Some(self.pod.path().to_owned()),
            ifname: ifname.into(),
            ..RuntimeConf::default()
        }
    }

    fn host_local(&self, subnet: &str) -> Value {
        json!({"type": "host-local", "dataDir": self.data.path(), "ranges": [[{"subnet": subnet}]]})
    }

    fn leases(&self, net: &str) -> Vec<String> {
        leases(self.data.path(), net)
    }

    fn add(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<CniResult, Error> {
        self.host.run(|| self.invoker.add_list(list, rt))
    }

    fn del(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        cached: Option<&CniResult>,
    ) -> Result<(), Error> {
        self.host.run(|| self.invoker.del_list(list, rt, cached))
    }

    fn check(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        cached: &CniResult,
    ) -> Result<(), Error> {
        self.host.run(|| self.invoker.check_list(list, rt, cached))
    }
}

/// Files host-local keeps per reservation under `<dataDir>/<net>` (it also
/// keeps `lock` and `last_reserved_ip.*`, which are not leases).
fn leases(data_dir: &Path, net: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(data_dir.join(net)) else {
        return vec![];
    };
    dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .collect()
}

fn list(v: &Value) -> NetworkConfigList {
    NetworkConfigList::from_value(v.clone()).unwrap()
}

fn ptp_tuning(
    f: &Fixture,
    version: Version,
    net: &str,
    subnet: &str,
    mac: &str,
) -> NetworkConfigList {
    list(&json!({
        "cniVersion": version.as_str(), "name": net,
        "plugins": [
            {"type": "ptp", "ipam": f.host_local(subnet)},
            {"type": "tuning", "mac": mac, "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}
        ]
    }))
}

#[test]
fn ptp_tuning_chain_every_version() {
    for (i, version) in PLUGIN_VERSIONS.into_iter().enumerate() {
        let f = Fixture::new();
        let net = format!("chain{i}");
        let mac = format!("02:00:00:00:01:0{i}");
        let l = ptp_tuning(&f, version, &net, &format!("10.201.{i}.0/24"), &mac);
        let rt = f.rt("c-chain", "eth0");

        let r = f.add(&l, &rt).unwrap_or_else(|e| panic!("{version}: {e}"));
        // The pod sees what the result says: eth0, with the leased address
        // and the MAC tuning set from its config, after parsing our
        // converted prevResult.
        let eth0 = f.pod.link("eth0").expect("eth0 in the pod");
        assert_eq!(eth0["address"], mac.as_str(), "{version}");
        let addr = r.ips[0].address.to_string();
        assert!(addr.starts_with(&format!("10.201.{i}.")), "{addr}");
        assert!(f.pod.addrs("eth0").contains(&addr), "{version}");
        let pod_if = r.interfaces.iter().find(|x| x.name == "eth0").unwrap();
        assert_eq!(pod_if.mac, mac, "tuning's result carries the new MAC");
        assert_eq!(pod_if.sandbox, f.pod.path().to_string_lossy());
        assert_eq!(f.leases(&net).len(), 1, "one lease while attached");
        let sysctl = f
            .pod
            .sh("cat", &["/proc/sys/net/ipv4/conf/eth0/arp_notify"]);
        assert_eq!(
            sysctl.trim(),
            "1",
            "{version}: tuning applied its sysctl in the pod"
        );
        // The host side of the ptp pair lives in the host netns only.
        let host_veth = &r
            .interfaces
            .iter()
            .find(|x| x.sandbox.is_empty())
            .unwrap()
            .name;
        assert!(f.host.link(host_veth).is_some());

        if version.allows_check() {
            f.check(&l, &rt, &r)
                .unwrap_or_else(|e| panic!("CHECK {version}: {e}"));
        } else {
            assert!(matches!(
                f.check(&l, &rt, &r),
                Err(Error::NotSupported { .. })
            ));
        }

        f.del(&l, &rt, Some(&r))
            .unwrap_or_else(|e| panic!("DEL {version}: {e}"));
        assert!(f.pod.link("eth0").is_none(), "{version}: eth0 gone");
        assert!(
            f.host.link(host_veth).is_none(),
            "{version}: host veth gone"
        );
        assert!(f.leases(&net).is_empty(), "{version}: lease released");
        f.del(&l, &rt, None)
            .unwrap_or_else(|e| panic!("second DEL {version}: {e}"));
    }
}

#[test]
fn del_after_the_netns_is_gone_releases_the_lease() {
    for (i, version) in PLUGIN_VERSIONS.into_iter().enumerate() {
        let f = Fixture::new();
        let net = format!("gone{i}");
        let l = ptp_tuning(
            &f,
            version,
            &net,
            &format!("10.202.{i}.0/24"),
            "02:00:00:00:02:01",
        );
        let rt = f.rt("c-gone", "eth0");
        let r = f.add(&l, &rt).unwrap();
        let pod_path = f.pod.path().to_owned();
        let Fixture {
            host,
            pod,
            data,
            invoker,
        } = f;
        drop(pod);
        assert!(!pod_path.exists());
        host.run(|| invoker.del_list(&l, &rt, Some(&r)))
            .unwrap_or_else(|e| panic!("{version}: DEL with the netns gone: {e}"));
        let rt_no_ns = RuntimeConf {
            netns: None,
            ..rt.clone()
        };
        host.run(|| invoker.del_list(&l, &rt_no_ns, None))
            .unwrap_or_else(|e| panic!("{version}: DEL without CNI_NETNS: {e}"));
        let left = leases(data.path(), &net);
        assert!(left.is_empty(), "{version}: leases left {left:?}");
    }
}

#[test]
fn bridge_macvlan_static_every_version() {
    for (i, version) in PLUGIN_VERSIONS.into_iter().enumerate() {
        let f = Fixture::new();
        // The macvlan master lives in the host netns, where the plugin runs.
        f.host.sh(
            "ip",
            &[
                "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p",
            ],
        );
        f.host.sh("ip", &["link", "set", "uplink0", "up"]);
        let bridge = list(
            &json!({"cniVersion": version.as_str(), "name": format!("br{i}"),
            "type": "bridge", "bridge": "plxbr0", "isGateway": true, "ipam": f.host_local(&format!("10.203.{i}.0/24"))}),
        );
        let macvlan = list(
            &json!({"cniVersion": version.as_str(), "name": format!("mv{i}"), "plugins": [
                {"type": "macvlan", "master": "uplink0", "mode": "bridge",
                 "ipam": {"type": "static", "addresses": [{"address": format!("10.204.{i}.7/24")}]}},
            ]}),
        );
        let rt0 = f.rt("c-multi", "eth0");
        let rt1 = f.rt("c-multi", "net1");

        let r0 = f
            .add(&bridge, &rt0)
            .unwrap_or_else(|e| panic!("bridge {version}: {e}"));
        let r1 = f
            .add(&macvlan, &rt1)
            .unwrap_or_else(|e| panic!("macvlan {version}: {e}"));
        assert!(
            f.host.link("plxbr0").is_some(),
            "bridge created in the host netns"
        );
        assert!(f.pod.addrs("eth0").contains(&r0.ips[0].address.to_string()));
        assert!(f.pod.addrs("net1").contains(&format!("10.204.{i}.7/24")));
        assert_eq!(
            f.pod.link("net1").unwrap()["linkinfo"]["info_kind"],
            "macvlan"
        );
        assert_eq!(r1.ips[0].address.to_string(), format!("10.204.{i}.7/24"));

        // The gateway on the bridge answers a ping from the pod.
        let gw = r0.ips[0].gateway.unwrap().to_string();
        let ping = f.pod.exec("ping", &["-c1", "-W2", &gw]).unwrap();
        assert!(ping.status.success(), "{version}: ping {gw}: {ping:?}");

        f.del(&macvlan, &rt1, Some(&r1)).unwrap();
        f.del(&bridge, &rt0, Some(&r0)).unwrap();
        assert!(f.pod.link("net1").is_none() && f.pod.link("eth0").is_none());
        assert!(f.leases(&format!("br{i}")).is_empty());
    }
}

#[test]
fn check_fails_once_the_address_is_removed() {
    let f = Fixture::new();
    let l = ptp_tuning(
        &f,
        Version::V1_0_0,
        "tamper",
        "10.205.0.0/24",
        "02:00:00:00:05:01",
    );
    let rt = f.rt("c-tamper", "eth0");
    let r = f.add(&l, &rt).unwrap();
    f.check(&l, &rt, &r).unwrap();
    f.pod.sh("ip", &["addr", "flush", "dev", "eth0"]);
    let err = f.check(&l, &rt, &r).unwrap_err();
    let Error::Plugin { plugin, error, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(plugin, "ptp");
    assert!(
        error.msg.contains("10.205.0."),
        "the plugin's own message: {}",
        error.msg
    );
    f.del(&l, &rt, Some(&r)).unwrap();
}

#[test]
fn plugin_errors_keep_their_code_and_message() {
    let f = Fixture::new();
    let l = list(&json!({"cniVersion": "1.0.0", "name": "nomaster",
        "type": "macvlan", "master": "does-not-exist", "ipam": {"type": "static", "addresses": [{"address": "10.206.0.2/24"}]}}));
    let err = f.add(&l, &f.rt("c-err", "net1")).unwrap_err();
    let Error::Plugin { error, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        error.msg.to_lowercase().contains("not found"),
        "{}",
        error.msg
    );
    assert!(
        err.to_string().contains("macvlan"),
        "names the delegate: {err}"
    );
    assert!(f.pod.link("net1").is_none(), "nothing created");
}

#[test]
fn version_1_1_is_refused_by_1_0_plugins() {
    let f = Fixture::new();
    let l = ptp_tuning(
        &f,
        Version::V1_1_0,
        "new",
        "10.207.0.0/24",
        "02:00:00:00:07:01",
    );
    let err = f.invoker.validate_list(&l).unwrap_err();
    assert!(
        err.to_string().contains("incompatible CNI versions"),
        "{err}"
    );
    let rt = f.rt("c-new", "eth0");
    let err = f.add(&l, &rt).unwrap_err();
    let Error::Plugin { error, .. } = err else {
        panic!()
    };
    assert_eq!(error.code, 1);
    for v in PLUGIN_VERSIONS {
        f.invoker
            .validate_list(&ptp_tuning(
                &f,
                v,
                "ok",
                "10.207.1.0/24",
                "02:00:00:00:07:02",
            ))
            .unwrap();
    }
}

#[test]
fn portmap_gets_capitalised_runtime_config_from_containerd() {
    // portmap (Go) reads go-cni's tagless structs; we pass them through as
    // given and only to the plugin that declares the capability.
    let f = Fixture::new();
    let l = list(&json!({"cniVersion": "1.0.0", "name": "pm", "plugins": [
        {"type": "ptp", "ipam": f.host_local("10.208.0.0/24")},
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
    ]}));
    let mut rt = f.rt("c-pm", "eth0");
    rt.capability_args = json!({"portMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]})
        .as_object()
        .unwrap()
        .clone();
    let r = f.add(&l, &rt).unwrap_or_else(|e| panic!("{e}"));
    let nat = f.host.sh("iptables-save", &["-t", "nat"]);
    assert!(
        nat.contains("--dport 18080"),
        "portmap installed the mapping:\n{nat}"
    );
    f.del(&l, &rt, Some(&r)).unwrap();
}
