//! libFuzzer entry for [`bulwark_fuzz::encrypted_block`]; the checks live there (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bulwark_fuzz::encrypted_block(data));
