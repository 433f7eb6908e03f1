//! Any bytes as the attachment cache file: see `plexus_meta_cni::selfcheck::cache`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = plexus_meta_cni::selfcheck::cache(data) {
        panic!("{e}");
    }
});
