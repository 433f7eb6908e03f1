//! Shared by the golden and dump tests: the captured flower vectors
//! (`fixtures/flower/*.hex`, from `capture.sh`) and the capture
//! namespace's ports.
#![allow(dead_code)]

use std::path::Path;

use plexus_dpu_offload::flower::{Policy, PortMap};

/// The cookie every captured action carries.
pub const COOKIE: [u8; 16] = [
    0x50, 0x58, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x07, 0, 0, 0xc0, 0xde,
];
/// veth0's index in the capture namespace (see capture.sh).
pub const VETH0: u32 = 3;

pub fn ports() -> PortMap {
    let mut p = PortMap::new();
    for (name, i) in [("veth1", 2), ("veth0", 3), ("rep2p", 4), ("rep2", 5)] {
        p.insert(name, i);
    }
    p
}

pub struct Vector {
    pub name: String,
    pub flow: String,
    pub policy: Policy,
    pub pref: u16,
    pub bytes: Vec<u8>,
}

pub fn vectors() -> Vec<Vector> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flower");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{}: no '# {key}:' line", path.display()))
                .to_owned()
        };
        let flow_line = header("flow");
        let (flow, policy) = match flow_line.split_once(" # policy=") {
            Some((f, p)) => (f.to_owned(), p.parse().unwrap()),
            None => (flow_line.clone(), Policy::PreferHw),
        };
        out.push(Vector {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            flow,
            policy,
            pref: header("pref").parse().unwrap(),
            bytes: plexus_testkit::bytes::hex_fixture(&text),
        });
    }
    out
}
