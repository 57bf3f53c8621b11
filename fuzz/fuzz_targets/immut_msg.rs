//! libFuzzer entry for [`bulwark_fuzz::immut_msg`]; the checks live there (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bulwark_fuzz::immut_msg(data));
