//! Any bytes as the networks annotation, either form: see `plexus_meta_cni::selfcheck::annotation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = plexus_meta_cni::selfcheck::annotation(data) {
        panic!("{e}");
    }
});
