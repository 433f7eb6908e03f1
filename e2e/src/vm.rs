//! The kernel matrix (`make kernel-e2e`): the tests that touch tc, eBPF or
//! a link type, run again inside VMs booted on Debian's own kernels.
//!
//! This machine's kernel has no tc flower, ipvlan or 802.1q, and it is
//! newer than any kernel users run. Debian 12's 6.1 (the oldest kernel we
//! support) and bookworm's 6.12 have all of them. Each boots with
//! virtme-ng under TCG, with the host's filesystem as its root, so the
//! test binaries built here run inside unchanged; nextest runs them from
//! the build's metadata (no cargo build in the guest) and writes a JUnit
//! report into `target/nextest/vm/`, the one directory the guest may write.
//!
//! What is here is pure: which kernels, which tests, the guest's command
//! line, the JUnit report and the matrix table. `src/bin/kernel-matrix.rs`
//! does the booting.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Every test that touches tc, eBPF or a link type: the `dpu-offload`
/// black box, the eBPF datapath's traffic and parity suites, the netlink
/// layer's kernel tests, and the `vm_*` binaries, which need what the host
/// kernel lacks (cls_flower, ipvlan, 8021q) and run nowhere else.
pub const SUITE: &str = "binary(dpu_offload) | binary(/^vm_/) | \
    (package(plexus-dpu-offload) & binary(/^ebpf_/)) | \
    (package(plexus-netlink) & binary(kernel))";

/// The `vm_*` test binaries run only in the VMs: `make test` leaves them
/// out of the host run with this filter.
pub const HOST_EXCLUDES: &str = "not binary(/^vm_/)";

/// Modules the suites need; loaded before the tests so that a kernel
/// without one fails with its name rather than somewhere in a test.
pub const MODULES: &[&str] = &[
    "cls_flower",
    "cls_bpf",
    "cls_u32",
    "act_gact",
    "act_mirred",
    "act_vlan",
    "act_pedit",
    "ipvlan",
    "8021q",
    "macvlan",
    "veth",
];

/// A kernel of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The series asked for, e.g. `6.1`.
    pub series: String,
    /// The image to boot, e.g. `/boot/vmlinuz-6.1.0-57-amd64`.
    pub image: PathBuf,
    /// Its release (`uname -r`), e.g. `6.1.0-57-amd64`.
    pub release: String,
}

/// Tests that do not run on a series yet, with the reason the matrix
/// prints. Each entry is a nextest filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// The series it applies to.
    pub series: &'static str,
    /// A nextest filter for the tests left out.
    pub filter: &'static str,
    /// Why, and what lifts it.
    pub why: &'static str,
}

/// What is left out, and why. Empty is the goal, and where it is: the
/// eBPF datapath loads on 6.1 since its classifier was split into global
/// functions (issue 22).
pub const EXCLUSIONS: &[Exclusion] = &[];

fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// The newest generic (not `-rt`, not `-cloud`) Debian kernel image of a
/// series in `boot`, e.g. `6.1` finds `vmlinuz-6.1.0-57-amd64` but not
/// `vmlinuz-6.12.118+deb12-amd64`.
///
/// # Errors
/// When there is none, with the package that provides it.
pub fn find_kernel(boot: &Path, series: &str) -> Result<Kernel, String> {
    let prefix = format!("vmlinuz-{series}.");
    let mut found: Vec<String> = std::fs::read_dir(boot)
        .map_err(|e| format!("{}: {e}", boot.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n.ends_with("-amd64"))
        .filter(|n| !n.contains("-rt-") && !n.contains("-cloud-"))
        .map(|n| n["vmlinuz-".len()..].to_owned())
        .collect();
    found.sort_by_key(|r| version_key(r));
    let release = found.pop().ok_or_else(|| {
        format!(
            "no Linux {series} image in {} (make setup installs linux-image-amd64 for 6.1 and linux-image-6.12-amd64 for 6.12)",
            boot.display()
        )
    })?;
    Ok(Kernel {
        series: series.to_owned(),
        image: boot.join(format!("vmlinuz-{release}")),
        release,
    })
}

/// The nextest filter a series runs: `filter` (the suite by default) less
/// its exclusions.
#[must_use]
pub fn filter_for(series: &str, filter: &str) -> String {
    filter_less(series, filter, EXCLUSIONS)
}

fn filter_less(series: &str, filter: &str, exclusions: &[Exclusion]) -> String {
    let mut out = format!("({filter})");
    for e in exclusions.iter().filter(|e| e.series == series) {
        let _ = write!(out, " & not ({})", e.filter);
    }
    out
}

/// Quotes a word for the guest's `sh -c`.
#[must_use]
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed, crashed or timed out.
    Fail,
    /// nextest skipped it (never, with our filters; kept for the report).
    Skipped,
}

/// One test of a JUnit report.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `package::binary test`, as nextest names it.
    pub id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Its wall time in the VM (TCG: not a timing, a budget check).
    pub secs: f64,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(
        tag[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The test cases of a nextest JUnit report.
#[must_use]
pub fn parse_junit(xml: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find("<testcase ") {
        rest = &rest[at..];
        let tag_end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..tag_end];
        let self_closing = tag.ends_with('/');
        let body_end = if self_closing {
            tag_end
        } else {
            rest.find("</testcase>").unwrap_or(rest.len())
        };
        let body = &rest[tag_end..body_end];
        let outcome = if body.contains("<failure") || body.contains("<error") {
            Outcome::Fail
        } else if body.contains("<skipped") {
            Outcome::Skipped
        } else {
            Outcome::Pass
        };
        let name = attr(tag, "name").unwrap_or_default();
        let class = attr(tag, "classname").unwrap_or_default();
        cases.push(Case {
            id: format!("{class} {name}"),
            outcome,
            secs: attr(tag, "time")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0.0),
        });
        rest = &rest[body_end.max(1)..];
    }
    cases
}

/// One column of the matrix: a kernel and what its VM reported (`None`
/// when the VM produced no report: it did not boot or the run died).
#[derive(Debug, Clone)]
pub struct Column {
    /// The kernel.
    pub kernel: Kernel,
    /// Its cases.
    pub cases: Option<Vec<Case>>,
    /// The VM's wall time, boot included.
    pub secs: f64,
}

/// The matrix as text: a row per test, a column per kernel, then what was
/// left out and why.
#[must_use]
pub fn table(columns: &[Column]) -> String {
    let mut ids: Vec<&str> = columns
        .iter()
        .flat_map(|c| c.cases.iter().flatten().map(|t| t.id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let width = ids.iter().map(|i| i.len()).max().unwrap_or(4).max(4);
    let heads: Vec<String> = columns.iter().map(|c| c.kernel.release.clone()).collect();
    let mut out = String::new();
    let _ = write!(out, "{:width$}", "test");
    for h in &heads {
        let _ = write!(out, "  {h:>w$}", w = h.len().max(8));
    }
    out.push('\n');
    for id in &ids {
        let _ = write!(out, "{id:width$}");
        for (c, h) in columns.iter().zip(&heads) {
            let cell = match &c.cases {
                None => "no report".to_owned(),
                Some(cases) => match cases.iter().find(|t| t.id == *id) {
                    Some(t) => match t.outcome {
                        Outcome::Pass => format!("pass {:.0}s", t.secs),
                        Outcome::Fail => format!("FAIL {:.0}s", t.secs),
                        Outcome::Skipped => "skipped".to_owned(),
                    },
                    None => "not run".to_owned(),
                },
            };
            let _ = write!(out, "  {cell:>w$}", w = h.len().max(8));
        }
        out.push('\n');
    }
    for c in columns {
        let summary = match &c.cases {
            None => "no report: the VM did not finish".to_owned(),
            Some(cases) => {
                let failed = cases.iter().filter(|t| t.outcome == Outcome::Fail).count();
                format!("{} tests, {failed} failed", cases.len())
            }
        };
        let _ = writeln!(
            out,
            "Linux {} ({}): {summary}, {:.0} s in the VM",
            c.kernel.release,
            c.kernel.image.display(),
            c.secs
        );
        for e in EXCLUSIONS.iter().filter(|e| e.series == c.kernel.series) {
            let _ = writeln!(out, "  not run on {}: {} ({})", e.series, e.filter, e.why);
        }
    }
    out
}

/// Whether every column reported and nothing failed.
#[must_use]
pub fn all_passed(columns: &[Column]) -> bool {
    columns.iter().all(|c| {
        c.cases.as_ref().is_some_and(|cases| {
            !cases.is_empty() && cases.iter().all(|t| t.outcome != Outcome::Fail)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_series_newest_generic_image() {
        let boot = tempfile::tempdir().unwrap();
        for f in [
            "vmlinuz-6.1.0-47-amd64",
            "vmlinuz-6.1.0-57-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-60-rt-amd64",
            "vmlinuz-6.12.118+deb12-amd64",
            "vmlinuz-6.12.99+deb12-amd64",
            "vmlinuz-6.12.120+deb12-cloud-amd64",
            "config-6.1.0-99-amd64",
        ] {
            std::fs::write(boot.path().join(f), "").unwrap();
        }
        let k = find_kernel(boot.path(), "6.1").unwrap();
        assert_eq!(k.release, "6.1.0-57-amd64");
        assert_eq!(k.image, boot.path().join("vmlinuz-6.1.0-57-amd64"));
        assert_eq!(
            find_kernel(boot.path(), "6.12").unwrap().release,
            "6.12.118+deb12-amd64"
        );
        let err = find_kernel(boot.path(), "5.15").unwrap_err();
        assert!(err.contains("no Linux 5.15 image"), "{err}");
    }

    #[test]
    fn junit_cases_and_outcomes() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3" failures="1" errors="0">
  <testsuite name="plexus-e2e::dpu_offload" tests="3" disabled="0" errors="0" failures="1">
    <testcase name="a_passes" classname="plexus-e2e::dpu_offload" timestamp="2026-12-04T17:00:00Z" time="27.639">
    </testcase>
    <testcase name="b_fails" classname="plexus-e2e::dpu_offload" timestamp="x" time="33.28">
      <failure type="test failure">thread &apos;b&apos; panicked</failure>
      <system-out>out</system-out>
    </testcase>
    <testcase name="c_&amp;_closed" classname="plexus-netlink::kernel" time="0.5"/>
  </testsuite>
</testsuites>"#;
        let cases = parse_junit(xml);
        assert_eq!(
            cases,
            vec![
                Case {
                    id: "plexus-e2e::dpu_offload a_passes".into(),
                    outcome: Outcome::Pass,
                    secs: 27.639
                },
                Case {
                    id: "plexus-e2e::dpu_offload b_fails".into(),
                    outcome: Outcome::Fail,
                    secs: 33.28
                },
                Case {
                    id: "plexus-netlink::kernel c_&_closed".into(),
                    outcome: Outcome::Pass,
                    secs: 0.5
                },
            ]
        );
    }

    #[test]
    fn the_table_shows_every_kernel_and_a_missing_report_fails() {
        let k = |series: &str, release: &str| Kernel {
            series: series.into(),
            image: PathBuf::from(format!("/boot/vmlinuz-{release}")),
            release: release.into(),
        };
        let case = |id: &str, outcome| Case {
            id: id.into(),
            outcome,
            secs: 1.0,
        };
        let mut cols = vec![
            Column {
                kernel: k("6.1", "6.1.0-57-amd64"),
                cases: Some(vec![case("p::b x", Outcome::Pass)]),
                secs: 60.0,
            },
            Column {
                kernel: k("6.12", "6.12.118+deb12-amd64"),
                cases: Some(vec![
                    case("p::b x", Outcome::Pass),
                    case("p::b y", Outcome::Fail),
                ]),
                secs: 70.0,
            },
        ];
        let t = table(&cols);
        assert!(
            t.contains("6.1.0-57-amd64") && t.contains("6.12.118+deb12-amd64"),
            "{t}"
        );
        let row_y = t.lines().find(|l| l.starts_with("p::b y")).unwrap();
        assert!(row_y.contains("not run") && row_y.contains("FAIL"), "{t}");
        assert!(t.contains("2 tests, 1 failed"), "{t}");
        assert!(!all_passed(&cols));
        cols[1].cases = Some(vec![case("p::b x", Outcome::Pass)]);
        assert!(all_passed(&cols));
        cols[0].cases = None;
        assert!(table(&cols).contains("no report"));
        assert!(!all_passed(&cols));
        cols[0].cases = Some(Vec::new());
        assert!(!all_passed(&cols), "an empty run is not a pass");
    }

    #[test]
    fn filters_and_quoting() {
        let ex = [Exclusion {
            series: "6.1",
            filter: "test(y)",
            why: "",
        }];
        assert_eq!(filter_less("6.12", "binary(x)", &ex), "(binary(x))");
        assert_eq!(
            filter_less("6.1", "binary(x)", &ex),
            "(binary(x)) & not (test(y))"
        );
        assert_eq!(filter_for("6.1", "binary(x)"), "(binary(x))");
        assert_eq!(sh_quote("/work/main/target"), "/work/main/target");
        assert_eq!(sh_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(sh_quote(""), "''");
    }
}
