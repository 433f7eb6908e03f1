//! The README's first command must keep working: `scripts/demo.sh` (what
//! `make demo` runs after building) runs to the end, every step it checks
//! holds, and it leaves no namespace behind.

use std::process::Command;

fn namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("plxdemo") || n.contains("demo-eswitch"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_demo_runs_to_the_end_and_leaves_nothing() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    let out = Command::new(script)
        .env("PLEXUS_BIN_DIR", plexus_e2e::target_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "[12/12] nothing left behind",
        "3 packets transmitted, 3 received, 0% packet loss",
        "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE=0000:3b:02.",
        "\"interface\":\"net2\"",
        "ebpf    ebpf",
        "deleted 5 flows",
        "pinned BPF objects left: 0",
        "done: three networks per pod",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    // Every ping line reports no loss.
    let pings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("packets transmitted"))
        .collect();
    assert_eq!(pings.len(), 3, "{stdout}");
    assert!(
        pings.iter().all(|l| l.contains(" 0% packet loss")),
        "{pings:?}"
    );
    assert!(namespaces().is_empty(), "left behind: {:?}", namespaces());
}
