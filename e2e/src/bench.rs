//! Helpers for the `make bench` benchmarks: timing loops run by one
//! long-lived bash process (so the measured path and its baseline are
//! started the same way, with bash's own `$EPOCHREALTIME`), and the table.

use std::fmt::Write as _;
use std::time::Duration;

use plexus_testkit::NetNs;

/// Makes this bench's environment the one plugins run in on a node: call
/// it first in `main`, before any thread starts.
///
/// Cargo runs benches with `LD_LIBRARY_PATH` listing every build script's
/// output directory, and every process a bench starts inherits it: each
/// exec of a dynamically linked binary (the Go reference plugins, plexus)
/// then tries some 200 paths for each of its libraries before the system
/// ones, 0.3 to 0.5 ms an exec here, which no runtime pays. It skewed
/// every comparison by how many execs each side makes (thick mode's shim
/// is one more per call than the delegates alone).
pub fn node_env() {
    // SAFETY: called first in a bench's `main`, while it is the only
    // thread, so nothing reads the environment concurrently.
    unsafe { std::env::remove_var("LD_LIBRARY_PATH") };
}

/// Runs `body` `n` times in one bash process inside `ns` (after `setup`,
/// which is not timed) and returns each iteration's duration. `body` must
/// exit non-zero on failure; the loop then stops and this panics.
///
/// # Panics
/// When bash fails.
#[must_use]
pub fn bash_loop(ns: &NetNs, setup: &str, body: &str, n: usize) -> Vec<Duration> {
    let script = format!(
        r#"{setup}
for _ in $(seq {n}); do
  t0=$EPOCHREALTIME
  {body}
  t1=$EPOCHREALTIME
  echo $(( (${{t1/./}} - ${{t0/./}}) ))
done"#
    );
    let out = ns
        .command("bash")
        .expect("netns")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "benchmark loop failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Duration::from_micros(l.trim().parse().expect("microseconds")))
        .collect()
}

/// The median.
#[must_use]
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The 90th percentile.
#[must_use]
pub fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9) / 10]
}

/// Milliseconds.
#[must_use]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A markdown table of `(name, samples)` rows: median and p90 in ms.
#[must_use]
pub fn table(title: &str, rows: &mut [(&str, Vec<Duration>)]) -> String {
    let mut out = String::new();
    let n = rows.first().map_or(0, |r| r.1.len());
    writeln!(out, "\n{title} ({n} runs each)\n").unwrap();
    writeln!(out, "| {:<44} | median ms | p90 ms |", "path").unwrap();
    writeln!(out, "|{:-<46}|-----------|--------|", "").unwrap();
    for (name, v) in rows.iter_mut() {
        writeln!(
            out,
            "| {name:<44} | {:>9.2} | {:>6.2} |",
            ms(median(v)),
            ms(p90(v))
        )
        .unwrap();
    }
    out
}

/// A flow table of `n` flows in five shapes (L2 exact, TCP 5-tuple with a
/// /24, untagged IPv4 with a VLAN push, UDP with a MAC rewrite and a
/// mirror, IPv4 source with a goto), spread over `in_ports`, outputs to
/// `up0`/`mon0`. `offset` shifts every value, so tables with different
/// offsets share no match.
#[must_use]
pub fn flow_table(n: usize, offset: usize, in_ports: &[&str]) -> String {
    let mut s = String::new();
    for j in 0..n {
        let i = j + offset;
        let (a, b) = (i / 256 % 256, i % 256);
        let port = in_ports[j % in_ports.len()];
        let line = match j % 5 {
            0 => format!(
                "priority=100,in_port={port},dl_dst=02:00:00:{:02x}:{a:02x}:{b:02x},actions=output:up0",
                i >> 16
            ),
            1 => format!(
                "priority=200,in_port={port},tcp,nw_src=10.{a}.{b}.0/24,nw_dst=192.168.{}.1,tp_dst={},actions=drop",
                i >> 16,
                i % 60000 + 1
            ),
            2 => format!(
                "priority=150,in_port={port},dl_vlan=0xffff,ip,nw_dst=10.{a}.{b}.{},actions=mod_vlan_vid:{},output:up0",
                1 + (i >> 16),
                i % 4000 + 1
            ),
            3 => format!(
                "priority=120,in_port={port},udp,nw_dst=10.{a}.{b}.{},tp_dst=4789,actions=mod_dl_dst:02:00:00:00:{a:02x}:{b:02x},output:mon0,output:up0",
                100 + (i >> 16)
            ),
            _ => format!(
                "priority=110,in_port={port},ip,nw_src=172.16.{a}.{b},nw_dst=172.17.{}.0/24,actions=goto_table:1",
                i >> 16
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}
