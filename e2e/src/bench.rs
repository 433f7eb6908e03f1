//! Helpers for the `make bench` benchmarks: timing loops run by one
//! long-lived bash process (so the measured path and its baseline are
//! started the same way, with bash's own `$EPOCHREALTIME`), and the table.

use std::fmt::Write as _;
use std::time::Duration;

use plexus_testkit::NetNs;

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
