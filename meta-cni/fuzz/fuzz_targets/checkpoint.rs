//! Any bytes as the kubelet's device-manager checkpoint: see `plexus_meta_cni::selfcheck::checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = plexus_meta_cni::selfcheck::checkpoint(data) {
        panic!("{e}");
    }
});
