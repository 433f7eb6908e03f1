//! `make bench`: the delegate invoker's overhead.
//!
//! ADD then DEL of `ptp` + `host-local` into a pod netns, (a) through
//! `Invoker::add_list`/`del_list`, and (b) run directly from one long-lived
//! bash loop (the baseline: no runtime at all, just fork/exec of the plugin
//! with the config on stdin). Both run in the same throwaway host netns,
//! alternating in rounds so that drift hits both alike. Prints medians and
//! the ratio; target ≤ 1.05.

#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::path::PathBuf;
use std::time::Instant;

use plexus_cni::conf::NetworkConfigList;
use plexus_cni::invoke::{Invoker, RuntimeConf};
use plexus_e2e::bench::{bash_loop, median, table};
use plexus_testkit::NetNs;
use serde_json::json;

const ROUNDS: usize = 6;
const PER_ROUND: usize = 15;

fn main() {
    plexus_e2e::bench::node_env();
    let host = NetNs::with_prefix("bench-host").expect("netns (run as root)");
    let pod = NetNs::with_prefix("bench-pod").expect("netns");
    let tmp = tempfile::tempdir().unwrap();
    // A single-plugin list: the baseline execs exactly that one plugin.
    let conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": "ptp",
        "ipam": {"type": "host-local", "dataDir": tmp.path().join("ipam"),
                 "ranges": [[{"subnet": "10.240.0.0/24"}]]}});
    let conf_file = tmp.path().join("ptp.conf");
    std::fs::write(&conf_file, conf.to_string()).unwrap();
    let list = NetworkConfigList::from_value(conf).unwrap();
    let invoker = Invoker::new(vec![PathBuf::from("/usr/lib/cni")]);
    let rt = RuntimeConf {
        container_id: "bench".into(),
        netns: Some(pod.path().to_owned()),
        ifname: "eth0".into(),
        ..RuntimeConf::default()
    };
    let setup = format!(
        "export CNI_CONTAINERID=bench CNI_NETNS={} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni CNI_ARGS=",
        pod.path().display()
    );
    let body = format!(
        "CNI_COMMAND=ADD /usr/lib/cni/ptp < {c} > /dev/null; CNI_COMMAND=DEL /usr/lib/cni/ptp < {c}",
        c = conf_file.display()
    );

    let mut ours = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..ROUNDS {
        ours.extend(host.run(|| {
            (0..PER_ROUND)
                .map(|_| {
                    let t = Instant::now();
                    let r = invoker.add_list(&list, &rt).expect("ADD");
                    invoker.del_list(&list, &rt, Some(&r)).expect("DEL");
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        }));
        direct.extend(bash_loop(&host, &setup, &body, PER_ROUND));
    }

    let ratio = median(&mut ours).as_secs_f64() / median(&mut direct).as_secs_f64();
    print!(
        "{}",
        table(
            "delegate invoker: ADD+DEL of ptp + host-local",
            &mut [
                ("plexus-cni Invoker (in process)", ours),
                ("bash loop exec'ing ptp (baseline)", direct),
            ],
        )
    );
    println!("\nratio invoker / baseline: {ratio:.3} (target <= 1.05)");
}
