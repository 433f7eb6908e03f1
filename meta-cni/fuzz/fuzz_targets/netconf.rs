//! Any bytes as the netconf on stdin: see `plexus_meta_cni::selfcheck::netconf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = plexus_meta_cni::selfcheck::netconf(data) {
        panic!("{e}");
    }
});
