//! libFuzzer entry for [`bulwark_fuzz::approval_statement`]; the checks live there (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bulwark_fuzz::approval_statement(data));
