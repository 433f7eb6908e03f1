//! `cargo run -p crds [DIR]`: writes every CRD into DIR (default: this
//! crate's directory, `crds/`); `--check` instead fails when a file
//! differs from what the types generate.

use std::{path::PathBuf, process::ExitCode};

fn main() -> anyhow::Result<ExitCode> {
    let mut check = false;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for a in std::env::args().skip(1) {
        if a == "--check" {
            check = true;
        } else {
            dir = PathBuf::from(a);
        }
    }
    let mut stale = Vec::new();
    for (file, crd) in crds::all() {
        let path = dir.join(file);
        let text = crds::render(&crd)?;
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, text)?;
            eprintln!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("out of date (run `make crds`): {}", stale.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
