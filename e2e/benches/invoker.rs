//! `make bench`: the delegate invoker's overhead.
//!
//! ADD then DEL of `ptp` + `host-local` into a pod netns, (a) through
//! `Invoker::add_list`/`del_list`, and (b) run directly from one long-lived
//! bash loop (the baseline: no runtime at all, just fork/exec of the plugin
//! with the config on stdin, timed with bash's own `$EPOCHREALTIME`). Both
//! run in the same throwaway host netns, alternating in rounds so that drift
//! hits both alike. Prints medians and the ratio; target ≤ 1.05.

#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use plexus_cni::conf::NetworkConfigList;
use plexus_cni::invoke::{Invoker, RuntimeConf};
use plexus_testkit::NetNs;
use serde_json::json;

const ROUNDS: usize = 6;
const PER_ROUND: usize = 15;

fn main() {
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
        direct.extend(shell_loop(&host, &conf_file, pod.path()));
    }

    let (m_ours, m_direct) = (median(&mut ours), median(&mut direct));
    let ratio = m_ours.as_secs_f64() / m_direct.as_secs_f64();
    let mut out = String::new();
    writeln!(
        out,
        "\ndelegate invoker: ADD+DEL of ptp + host-local ({} runs each)\n",
        ours.len()
    )
    .unwrap();
    writeln!(
        out,
        "| path                              | median ms | p90 ms |"
    )
    .unwrap();
    writeln!(
        out,
        "|-----------------------------------|-----------|--------|"
    )
    .unwrap();
    for (name, v) in [
        ("plexus-cni Invoker (in process)", &mut ours),
        ("bash loop exec'ing ptp (baseline)", &mut direct),
    ] {
        writeln!(
            out,
            "| {name:<33} | {:>9.2} | {:>6.2} |",
            ms(median(v)),
            ms(p90(v))
        )
        .unwrap();
    }
    writeln!(
        out,
        "\nratio invoker / baseline: {ratio:.3} (target <= 1.05)"
    )
    .unwrap();
    print!("{out}");
}

/// One bash process runs PER_ROUND ADD+DEL pairs and prints each duration
/// in microseconds; bash's startup is outside the timed region.
fn shell_loop(host: &NetNs, conf: &Path, netns: &Path) -> Vec<Duration> {
    let script = format!(
        r#"export CNI_CONTAINERID=bench CNI_NETNS={netns} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni CNI_ARGS=
for _ in $(seq {PER_ROUND}); do
  t0=$EPOCHREALTIME
  CNI_COMMAND=ADD /usr/lib/cni/ptp < {conf} > /dev/null || exit 1
  CNI_COMMAND=DEL /usr/lib/cni/ptp < {conf} || exit 1
  t1=$EPOCHREALTIME
  echo $(( (${{t1/./}} - ${{t0/./}}) ))
done"#,
        netns = netns.display(),
        conf = conf.display()
    );
    let out = host
        .command("bash")
        .unwrap()
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "baseline loop failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Duration::from_micros(l.trim().parse().unwrap()))
        .collect()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9) / 10]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
