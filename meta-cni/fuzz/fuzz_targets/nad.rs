//! Any bytes as NetworkAttachmentDefinition objects, YAML or JSON: see `plexus_meta_cni::selfcheck::nad`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = plexus_meta_cni::selfcheck::nad(data) {
        panic!("{e}");
    }
});
