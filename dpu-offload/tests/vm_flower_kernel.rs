//! Every golden flower request (`fixtures/flower/*.hex`: the bytes iproute2
//! sends, which `flower_golden.rs` proves Plexus sends too) given as is to
//! a real cls_flower, dumped back by the kernel, and decoded to the flow
//! it came from.
//!
//! This machine's kernel has no cls_flower: this binary runs only in the
//! kernel matrix (`make kernel-e2e`: Debian's 6.1 and 6.12 in VMs).
//!
//! `PLEXUS_CAPTURE_DUMPS=DIR` also writes each kernel dump to
//! `DIR/kernel_<vector>.hex`, the form of `fixtures/dump/`; that is how the
//! real dumps of the vlan, pedit and goto actions there were captured.

mod common;

use common::{COOKIE, VETH0, Vector, ports, vectors};
use plexus_dpu_offload::{
    dump::{self, Location},
    flower::{self, Policy, flags},
};
use plexus_netlink::{
    Netlink, Op,
    tc::{self, PARENT_INGRESS, TcFilter, TcFilterEntry},
};
use plexus_testkit::{NetNs, bytes::hexdump};

/// What the kernel did with one vector.
enum Outcome {
    /// Installed; the dump of the one filter it made.
    Installed(TcFilterEntry),
    /// Refused, with the kernel's message.
    Refused(String),
}

fn install(ns: &NetNs, v: &Vector) -> Outcome {
    ns.run(|| {
        let mut nl = Netlink::new().unwrap();
        tc::add_clsact(&mut nl, VETH0).unwrap();
        let op = Op::new(format!("install vector {}", v.name), "filter");
        let outcome = match nl.send_raw(&v.bytes, &op) {
            Err(e) => Outcome::Refused(e.to_string()),
            Ok(_) => {
                let mut dumped: Vec<TcFilterEntry> =
                    tc::dump_filters(&mut nl, VETH0, PARENT_INGRESS, None)
                        .unwrap()
                        .into_iter()
                        .filter(|e| e.handle != 0)
                        .collect();
                assert_eq!(dumped.len(), 1, "{}: one filter", v.name);
                Outcome::Installed(dumped.remove(0))
            }
        };
        tc::del_clsact(&mut nl, VETH0).unwrap();
        outcome
    })
}

/// The request Plexus would send for what the kernel dumped.
fn recompiled(got: &dump::InstalledFlow, policy: Policy) -> Result<Vec<u8>, String> {
    let options =
        flower::encode_options(&got.flow, &ports(), policy, &COOKIE).map_err(|e| e.to_string())?;
    let mut b = TcFilter {
        ifindex: got.ifindex,
        parent: PARENT_INGRESS,
        priority: got.prio,
        protocol: got.protocol,
        handle: 0,
        chain: (got.chain != 0).then_some(got.chain),
        kind: "flower".into(),
        options: Some(options),
    }
    .add_request()
    .encode(0);
    b[8..16].fill(0);
    Ok(b)
}

fn capture(dir: &std::path::Path, v: &Vector, entry: &TcFilterEntry) {
    let mut text = format!(
        "# A flower filter as Linux {} dumps it (RTM_NEWTFILTER payload, after the\n\
         # nlmsghdr), installed from fixtures/flower/{}.hex:\n# flow: {}\n# pref: {}\n",
        plexus_testkit::kernel_release(),
        v.name,
        v.flow,
        v.pref
    );
    for line in entry.raw.payload.chunks(16) {
        let hex: String = line.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&hex);
        text.push('\n');
    }
    std::fs::write(dir.join(format!("kernel_{}.hex", v.name)), text).unwrap();
}

#[test]
fn the_real_cls_flower_takes_every_golden_request_and_dumps_back_the_same_flow() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let vs = vectors();
    assert!(vs.len() >= 37, "only {} vectors", vs.len());
    // The capture layout (see fixtures/flower/capture.sh): interface
    // indexes are per netns and the veth driver registers the peer first.
    let ns = NetNs::with_prefix("flk").unwrap();
    ns.sh(
        "ip",
        &[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ],
    );
    ns.sh(
        "ip",
        &[
            "link", "add", "rep2", "type", "veth", "peer", "name", "rep2p",
        ],
    );
    let p = ports();
    for l in ns.links() {
        let name = l["ifname"].as_str().unwrap();
        if name != "lo" {
            assert_eq!(
                p.ifindex(name).map(u64::from),
                l["ifindex"].as_u64(),
                "{name} is not where the vectors expect it"
            );
        }
    }
    let capture_dir = std::env::var_os("PLEXUS_CAPTURE_DUMPS").map(std::path::PathBuf::from);
    let mut failures = Vec::new();
    let mut installed = 0;
    for v in &vs {
        let entry = match install(&ns, v) {
            Outcome::Refused(why) => {
                // skip_sw needs a device that offloads tc; veth does not,
                // and the kernel says so instead of keeping a rule that
                // would match nothing.
                if v.policy == Policy::HwOnly {
                    assert!(
                        why.contains("EOPNOTSUPP") || why.contains("not supported"),
                        "{}: {why}",
                        v.name
                    );
                    continue;
                }
                failures.push(format!("{} ({}): refused: {why}", v.name, v.flow));
                continue;
            }
            Outcome::Installed(e) => e,
        };
        installed += 1;
        if let Some(dir) = &capture_dir {
            capture(dir, v, &entry);
        }
        let got = match dump::decode(&entry, &ports()) {
            Ok(Some(f)) => f,
            Ok(None) => {
                failures.push(format!("{}: the dump is not recognised as ours", v.name));
                continue;
            }
            Err(e) => {
                failures.push(format!("{}: the dump does not decode: {e}", v.name));
                continue;
            }
        };
        let policy = if got.flags & flags::SKIP_HW != 0 {
            Policy::SwOnly
        } else {
            Policy::PreferHw
        };
        let mut want = v.bytes.clone();
        want[8..16].fill(0);
        let again = recompiled(&got, policy);
        let problems: Vec<String> = [
            (!got.unknown.is_empty()).then(|| format!("not understood: {:?}", got.unknown)),
            (got.cookie != flower::FlowCookie::from_bytes(&COOKIE))
                .then(|| format!("cookie {:?}", got.cookie)),
            (policy != v.policy).then(|| format!("policy {policy:?}, sent {:?}", v.policy)),
            (got.prio != v.pref).then(|| format!("pref {}, sent {}", got.prio, v.pref)),
            (got.location() != Location::TcSw || got.in_hw())
                .then(|| format!("location {:?} on veth", got.location())),
            match &again {
                Err(e) => Some(format!("decodes to {}, which does not compile: {e}", got.flow)),
                Ok(again) => (*again != want).then(|| {
                    format!(
                        "decodes to {} which compiles to other bytes\n--- sent\n{}--- from the dump\n{}",
                        got.flow,
                        hexdump(&want),
                        hexdump(again)
                    )
                }),
            },
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            failures.push(format!("{} ({}): {}", v.name, v.flow, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors:\n{}",
        failures.len(),
        vs.len(),
        failures.join("\n")
    );
    let hw_only = vs.iter().filter(|v| v.policy == Policy::HwOnly).count();
    assert_eq!(
        installed,
        vs.len() - hw_only,
        "every other vector installed"
    );
}
