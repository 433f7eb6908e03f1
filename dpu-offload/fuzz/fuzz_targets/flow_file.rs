//! Any bytes as a flow file: see `plexus_dpu_offload::selfcheck`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = plexus_dpu_offload::selfcheck::check_flow_text(text)
    {
        panic!("{e}");
    }
});
