//! The config parser on 30k mutated config files (a deterministic
//! mutation fuzzer: cargo-fuzz needs nightly, which CI does not have).
//! Whatever the input: no panic, every pool it keeps is usable (a valid
//! name, unique, at least one selector, ranges in order), and a key's case
//! never changes the result, as with Go's decoder.

use plexus_sriov_device_plugin::config::{self, Config};
use plexus_testkit::bytes::Rng;

const CORPUS: &[&str] = &[
    r#"{"resourceList":[{"resourceName":"x710_net","selectors":[{"vendors":["8086"],"devices":["154c"],"drivers":["iavf"],"pfNames":["ens1f0#1-3"]}]}]}"#,
    r#"{"resourceList":[{"resourceName":"dpdk","resourcePrefix":"example.com","deviceType":"netDevice","selectors":{"drivers":["vfio-pci"],"rootDevices":["0000:3b:00.0#0,2-7"]},"additionalInfo":{"*":{"token":"3"}}}]}"#,
    r#"{"resourceList":[{"resourceName":"acc","deviceType":"accelerator","excludeTopology":true,"selectors":[{"vendors":["8086"],"devices":["0d90"]}]},{"resourceName":"rdma","selectors":[{"isRdma":true,"linkTypes":["ether"],"needVhostNet":true,"pciAddresses":["0000:5e:00.2"],"acpiIndexes":["101"]}]}]}"#,
];

const KEYS: &[&str] = &[
    "resourceList",
    "resourceName",
    "resourcePrefix",
    "deviceType",
    "excludeTopology",
    "additionalInfo",
    "selectors",
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "isRdma",
    "needVhostNet",
    "acpiIndexes",
];

const ALPHABET: &[u8] = b"{}[]\",:#-0123456789abcdefABC _.";

fn mutate(rng: &mut Rng, s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = ALPHABET[rng.below(ALPHABET.len())];
            }
            1 => b.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            2 if !b.is_empty() => {
                let end = (at + 1 + rng.below(6)).min(b.len());
                b.drain(at.min(end)..end);
            }
            3 => {
                // Duplicate a pool: names must stay unique.
                if let Some(i) = s.find("{\"resourceName\"") {
                    let j = s[i..]
                        .find("]}")
                        .map_or(s.len(), |j| i + j + 2)
                        .min(s.len());
                    let pool = s.as_bytes()[i..j].to_vec();
                    if let Some(k) = b.iter().position(|c| *c == b'[') {
                        let mut ins = pool;
                        ins.push(b',');
                        b.splice(k + 1..k + 1, ins);
                    }
                }
            }
            _ => {
                let n = rng.below(12);
                b.splice(at..at, std::iter::repeat_n(b'7', n));
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn check(text: &str, cfg: &Config) {
    let mut names = std::collections::HashSet::new();
    for p in &cfg.pools {
        assert!(
            !p.name.is_empty()
                && p.name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
            "{text}: kept pool with name {:?}",
            p.name
        );
        assert!(
            names.insert((p.prefix.clone(), p.name.clone())),
            "{text}: duplicate pool {} kept",
            p.name
        );
        assert!(
            !p.selectors.is_empty(),
            "{text}: pool {} kept without selectors",
            p.name
        );
        for s in &p.selectors {
            for r in s.pf_names.iter().chain(&s.root_devices) {
                assert!(!r.pf.is_empty(), "{text}: empty PF in {}", p.name);
                for (a, b) in r.ranges.iter().flatten() {
                    assert!(a <= b, "{text}: range {a}-{b} kept in {}", p.name);
                }
            }
        }
    }
}

fn recase(rng: &mut Rng, text: &str) -> String {
    let mut out = text.to_owned();
    for k in KEYS {
        let quoted = format!("\"{k}\"");
        let changed: String = k
            .chars()
            .map(|c| {
                if rng.below(2) == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        out = out.replace(&quoted, &format!("\"{changed}\""));
    }
    out
}

#[test]
fn mutated_configs_keep_every_invariant() {
    let mut rng = Rng::new(0x00c0_ff1e_5eed);
    let mut kept = 0;
    for i in 0..30_000 {
        let base = CORPUS[i % CORPUS.len()];
        let text = mutate(&mut rng, base);
        let cfg = config::parse(&text, "intel.com");
        check(&text, &cfg);
        kept += usize::from(!cfg.pools.is_empty());
        // The same text with its keys in another case reads the same.
        let again = config::parse(&recase(&mut rng, &text), "intel.com");
        assert_eq!(again.pools, cfg.pools, "{text}: key case changed the pools");
    }
    assert!(
        kept > 3_000,
        "only {kept} mutated configs kept a pool: the mutations are too destructive"
    );
}
