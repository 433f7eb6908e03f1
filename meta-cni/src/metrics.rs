//! Thick mode's metrics, in the Prometheus text format (version 0.0.4).
//!
//! Only `plexus daemon` turns them on ([`enable`]); a thin `plexus` process
//! records nothing. What is counted:
//! - `plexus_cni_requests_total{verb,result}`: every request the daemon
//!   served, `result` `ok` or the CNI error code;
//! - `plexus_cni_request_duration_seconds{verb}`: their latency;
//! - `plexus_delegate_duration_seconds{type,verb}` and
//!   `plexus_delegate_calls_total{type,verb,result}`: every delegate run;
//! - `plexus_api_requests_total{verb,result}`: API server requests (one per
//!   attempt), `result` `ok`, `retried`, `refused` or `timeout`;
//! - `plexus_informer_lookups_total{resource,result}` (`hit`/`miss`),
//!   `plexus_informer_events_total{resource}`,
//!   `plexus_informer_last_event_timestamp_seconds{resource}` (lag:
//!   `time() - x`) and `plexus_informer_synced{resource}`: the informer
//!   caches ([`crate::informer`]);
//! - `plexus_attachments_cached`: attachments in the cache directories the
//!   requests used (`cniDir`), read at each scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Histogram buckets, seconds: CNI calls take milliseconds to seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, String), u64>,
    request_duration: BTreeMap<String, Histogram>,
    delegate_calls: BTreeMap<(String, String, String), u64>,
    delegate_duration: BTreeMap<(String, String), Histogram>,
    api: BTreeMap<(String, String), u64>,
    informer_lookups: BTreeMap<(String, String), u64>,
    informer_events: BTreeMap<String, u64>,
    /// Unix time of each informer's last event (list, watch event or
    /// bookmark).
    informer_last_event: BTreeMap<String, f64>,
    informer_synced: BTreeSet<String>,
}

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// The attachment caches requests used (`cniDir`), counted at each
    /// scrape.
    cache_dirs: Mutex<BTreeSet<PathBuf>>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Turns metrics on for this process and returns them. Also observes every
/// delegate run.
pub fn enable() -> &'static Metrics {
    let m = METRICS.get_or_init(Metrics::default);
    plexus_cni::invoke::set_observer(|plugin, verb, elapsed, ok| {
        if let Some(m) = get() {
            m.delegate(plugin, verb, elapsed, ok);
        }
    });
    m
}

/// The metrics, when on.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut g) = self.inner.lock() {
            f(&mut g);
        }
    }

    /// A request the daemon served: `result` is `ok` or the CNI code.
    pub fn request(&self, verb: &str, result: &str, elapsed: Duration) {
        self.with(|i| {
            *i.requests
                .entry((verb.to_owned(), result.to_owned()))
                .or_default() += 1;
            i.request_duration
                .entry(verb.to_owned())
                .or_default()
                .observe(elapsed);
        });
    }

    /// A delegate run.
    pub fn delegate(&self, plugin: &str, verb: &str, elapsed: Duration, ok: bool) {
        self.with(|i| {
            let result = if ok { "ok" } else { "error" };
            *i.delegate_calls
                .entry((plugin.to_owned(), verb.to_owned(), result.to_owned()))
                .or_default() += 1;
            i.delegate_duration
                .entry((plugin.to_owned(), verb.to_owned()))
                .or_default()
                .observe(elapsed);
        });
    }

    /// A cache directory a request used.
    pub fn cache_dir(&self, dir: &Path) {
        if let Ok(mut d) = self.cache_dirs.lock()
            && !d.contains(dir)
        {
            d.insert(dir.to_owned());
        }
    }

    /// An API server request (one attempt).
    pub fn api(&self, verb: &str, result: &str) {
        self.with(|i| {
            *i.api
                .entry((verb.to_owned(), result.to_owned()))
                .or_default() += 1;
        });
    }

    /// A lookup in an informer cache: `hit`, or `miss` (then a GET).
    pub fn informer_lookup(&self, resource: &str, result: &str) {
        self.with(|i| {
            *i.informer_lookups
                .entry((resource.to_owned(), result.to_owned()))
                .or_default() += 1;
        });
    }

    /// An event from an informer's watch.
    pub fn informer_event(&self, resource: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.with(|i| {
            *i.informer_events.entry(resource.to_owned()).or_default() += 1;
            i.informer_last_event.insert(resource.to_owned(), now);
        });
    }

    /// An informer listed everything once.
    pub fn informer_synced(&self, resource: &str) {
        self.with(|i| {
            i.informer_synced.insert(resource.to_owned());
        });
    }

    /// The text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(i) = self.inner.lock() else {
            return out;
        };
        counter(
            &mut out,
            "plexus_cni_requests_total",
            "CNI requests served, by verb and result (ok or the CNI error code).",
            i.requests
                .iter()
                .map(|((v, r), n)| (format!("verb=\"{v}\",result=\"{r}\""), *n)),
        );
        histogram(
            &mut out,
            "plexus_cni_request_duration_seconds",
            "Time to serve a CNI request, by verb.",
            i.request_duration
                .iter()
                .map(|(v, h)| (format!("verb=\"{v}\""), h)),
        );
        counter(
            &mut out,
            "plexus_delegate_calls_total",
            "Delegate plugin runs, by plugin type, verb and result.",
            i.delegate_calls
                .iter()
                .map(|((t, v, r), n)| (format!("type=\"{t}\",verb=\"{v}\",result=\"{r}\""), *n)),
        );
        histogram(
            &mut out,
            "plexus_delegate_duration_seconds",
            "Time a delegate plugin took, by plugin type and verb.",
            i.delegate_duration
                .iter()
                .map(|((t, v), h)| (format!("type=\"{t}\",verb=\"{v}\""), h)),
        );
        counter(
            &mut out,
            "plexus_api_requests_total",
            "API server requests (each attempt), by verb and result.",
            i.api
                .iter()
                .map(|((v, r), n)| (format!("verb=\"{v}\",result=\"{r}\""), *n)),
        );
        counter(
            &mut out,
            "plexus_informer_lookups_total",
            "Reads of the informer caches, by resource and result (a miss is then a GET).",
            i.informer_lookups
                .iter()
                .map(|((r, h), n)| (format!("resource=\"{r}\",result=\"{h}\""), *n)),
        );
        counter(
            &mut out,
            "plexus_informer_events_total",
            "Events the informers' watches delivered, by resource.",
            i.informer_events
                .iter()
                .map(|(r, n)| (format!("resource=\"{r}\""), *n)),
        );
        let _ = writeln!(
            out,
            "# HELP plexus_informer_last_event_timestamp_seconds When an informer last heard \
             from the API server (its lag: time() minus this, bounded by the watch's bookmarks).\n\
             # TYPE plexus_informer_last_event_timestamp_seconds gauge"
        );
        for (r, t) in &i.informer_last_event {
            let _ = writeln!(
                out,
                "plexus_informer_last_event_timestamp_seconds{{resource=\"{r}\"}} {t:.3}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP plexus_informer_synced Whether an informer has listed everything once.\n\
             # TYPE plexus_informer_synced gauge"
        );
        for r in &i.informer_synced {
            let _ = writeln!(out, "plexus_informer_synced{{resource=\"{r}\"}} 1");
        }
        drop(i);
        let n: usize = self
            .cache_dirs
            .lock()
            .map(|d| d.iter().map(|p| cached(p)).sum())
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP plexus_attachments_cached Attachments in the cache directories requests use.\n\
             # TYPE plexus_attachments_cached gauge\nplexus_attachments_cached {n}"
        );
        out
    }
}

/// Files in the cache directory that are attachments (not locks).
fn cached(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    !n.starts_with('.') && !n.ends_with(".lock")
                })
                .count()
        })
        .unwrap_or(0)
}

fn counter(out: &mut String, name: &str, help: &str, rows: impl Iterator<Item = (String, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, n) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {n}");
    }
}

fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (String, &'a Histogram)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in rows {
        for (le, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_cumulative_buckets_sums_and_counts() {
        let m = Metrics::default();
        m.request("ADD", "ok", Duration::from_millis(30));
        m.request("ADD", "ok", Duration::from_millis(300));
        m.request("DEL", "11", Duration::from_millis(3));
        m.api("GET", "ok");
        let t = m.render();
        assert!(
            t.contains("plexus_cni_requests_total{verb=\"ADD\",result=\"ok\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("plexus_cni_requests_total{verb=\"DEL\",result=\"11\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("plexus_cni_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.025\"} 0\n")
        );
        assert!(
            t.contains("plexus_cni_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.05\"} 1\n")
        );
        assert!(
            t.contains("plexus_cni_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.5\"} 2\n")
        );
        assert!(
            t.contains("plexus_cni_request_duration_seconds_bucket{verb=\"ADD\",le=\"+Inf\"} 2\n")
        );
        assert!(t.contains("plexus_cni_request_duration_seconds_count{verb=\"ADD\"} 2\n"));
        assert!(t.contains("plexus_api_requests_total{verb=\"GET\",result=\"ok\"} 1\n"));
        assert!(t.contains("# TYPE plexus_delegate_duration_seconds histogram\n"));
    }
}
