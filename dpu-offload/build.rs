//! Builds the eBPF classifier (`bpf/plexus_tc.c`) with clang. No prebuilt
//! object is committed: the one the binary embeds is always this source.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let src = "bpf/plexus_tc.c";
    println!("cargo::rerun-if-changed={src}");
    println!("cargo::rerun-if-env-changed=CLANG");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("plexus_tc.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives in the multiarch include directory on Debian.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I"])
        .arg(&multiarch)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed on {src} ({s}); see its messages above"),
        Err(e) => panic!(
            "cannot run {clang} ({e}): the eBPF datapath is built from C at build time; install clang, llvm and libbpf-dev (`make setup`) or set CLANG"
        ),
    }
}
