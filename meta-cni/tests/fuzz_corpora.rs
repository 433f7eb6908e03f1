//! The fuzz corpora (`meta-cni/fuzz/corpus/<target>/`, what `make fuzz`
//! found and kept) replayed through the targets' invariants
//! ([`plexus_meta_cni::selfcheck`]) on every CI run: an input that once
//! broke a parser, or reached new code, keeps being checked.

use std::path::Path;

use plexus_meta_cni::selfcheck;

type Check = fn(&[u8]) -> Result<(), String>;

const TARGETS: &[(&str, Check)] = &[
    ("annotation", selfcheck::annotation),
    ("netconf", selfcheck::netconf),
    ("nad", selfcheck::nad),
    ("cache", selfcheck::cache),
    ("checkpoint", selfcheck::checkpoint),
];

#[test]
fn every_corpus_input_keeps_every_invariant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, check) in TARGETS {
        let dir = root.join(target);
        let inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!inputs.is_empty(), "{target}: an empty corpus");
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            count += 1;
            match std::panic::catch_unwind(|| check(&data)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{}: {e}", path.display())),
                Err(_) => failures.push(format!("{}: panicked", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{count} corpus inputs replayed");
}

#[test]
fn the_seeds_reach_the_interesting_paths() {
    // The corpora hold inputs that are accepted, not only junk: a check
    // that returned early on everything would pass the test above.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let read = |t: &str, f: &str| std::fs::read(root.join(t).join(f)).unwrap();
    let text = |t: &str, f: &str| String::from_utf8(read(t, f)).unwrap();
    assert!(plexus_meta_cni::selection::parse(&text("annotation", "json")).is_ok());
    assert!(
        plexus_meta_cni::state::Cache::from_bytes(&read("cache", "two-attachments.json")).is_ok()
    );
    let nads = plexus_meta_cni::nad::parse_text(&text("nad", "list-self.json")).unwrap();
    assert!(
        nads[0].network(Path::new("/x")).is_err(),
        "a NAD that runs plexus"
    );
    let map =
        plexus_meta_cni::devices::parse_checkpoint(&read("checkpoint", "kubelet.json"), "pod-a")
            .unwrap();
    assert_eq!(
        map["intel.com/sriov"],
        ["0000:03:02.0", "0000:03:02.3", "0000:03:02.1"]
    );
}
